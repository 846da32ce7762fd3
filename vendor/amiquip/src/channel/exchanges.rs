//! A channel's exchange methods: declare, bind, unbind, delete.

use super::*;

impl Channel {
    /// Synchronously declare an exchange named `exchange` with the given type and options.
    ///
    /// If the server cannot declare the exchange (e.g., if the exchange already exists with a
    /// different type or options that conflict with `options`), it will close this channel.
    pub fn exchange_declare<S: Into<String>>(
        &self,
        type_: ExchangeType,
        exchange: S,
        options: ExchangeDeclareOptions,
    ) -> Result<Exchange> {
        let exchange = exchange.into();
        let declare =
            AmqpExchange::Declare(options.into_declare(type_, exchange.clone(), false, false)?);
        self.call::<_, ExchangeDeclareOk>(declare)
            .map(|_ok| Exchange::new(self, exchange))
    }

    /// Asynchronously declare an exchange named `exchange` with the given type and options.
    ///
    /// If the server cannot declare the exchange (e.g., if the exchange already exists with a
    /// different type or options that conflict with `options`), it will close this channel.
    pub fn exchange_declare_nowait<S: Into<String>>(
        &self,
        type_: ExchangeType,
        exchange: S,
        options: ExchangeDeclareOptions,
    ) -> Result<Exchange> {
        let exchange = exchange.into();
        let declare =
            AmqpExchange::Declare(options.into_declare(type_, exchange.clone(), false, true)?);
        self.call_nowait(declare)
            .map(|()| Exchange::new(self, exchange))
    }

    /// Passively declare that a exchange exists. This asks the server to confirm that a exchange
    /// named `exchange` already exists; it will close the channel if it does not.
    pub fn exchange_declare_passive<S: Into<String>>(&self, exchange: S) -> Result<Exchange> {
        let exchange = exchange.into();
        // per spec, if passive is set all other fields are ignored except nowait (which
        // must be false to be meaningful)
        let type_ = ExchangeType::Direct;
        let options = ExchangeDeclareOptions {
            durable: false,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::default(),
        };
        let declare =
            AmqpExchange::Declare(options.into_declare(type_, exchange.clone(), true, false)?);
        self.call::<_, ExchangeDeclareOk>(declare)
            .map(|_ok| Exchange::new(self, exchange))
    }

    /// Synchronously bind an exchange to an exchange with the given routing key and arguments.
    ///
    /// If either the source or destination exchanges do not exist, the server will close this
    /// channel. Consider using [`exchange_declare`](#method.exchange_declare) and then
    /// [`Exchange::bind_to_source`](struct.Exchange.html#method.bind_to_source) (or one of its
    /// variants) to avoid this.
    ///
    /// Exchange-to-exchange binding is a RabbitMQ extension. You can examine the connection's
    /// [server properties](struct.Connection.html#method.server_properties) to see if the current
    /// connection supports this feature.
    pub fn exchange_bind<S0: Into<String>, S1: Into<String>, S2: Into<String>>(
        &self,
        destination: S0,
        source: S1,
        routing_key: S2,
        arguments: FieldTable,
    ) -> Result<()> {
        let bind = AmqpExchange::Bind(ExchangeBind {
            destination: short(destination)?,
            source: short(source)?,
            routing_key: short(routing_key)?,
            nowait: false,
            arguments,
        });
        self.call::<_, ExchangeBindOk>(bind).map(|_bind_ok| ())
    }

    /// Asynchronously bind an exchange to an exchange with the given routing key and arguments.
    ///
    /// If either the source or destination exchanges do not exist, the server will close this
    /// channel. Consider using [`exchange_declare`](#method.exchange_declare) and then
    /// [`Exchange::bind_to_source_nowait`](struct.Exchange.html#method.bind_to_source_nowait) (or
    /// one of its variants) to avoid this.
    ///
    /// Exchange-to-exchange binding is a RabbitMQ extension. You can examine the connection's
    /// [server properties](struct.Connection.html#method.server_properties) to see if the current
    /// connection supports this feature.
    pub fn exchange_bind_nowait<S0: Into<String>, S1: Into<String>, S2: Into<String>>(
        &self,
        destination: S0,
        source: S1,
        routing_key: S2,
        arguments: FieldTable,
    ) -> Result<()> {
        let bind = AmqpExchange::Bind(ExchangeBind {
            destination: short(destination)?,
            source: short(source)?,
            routing_key: short(routing_key)?,
            nowait: true,
            arguments,
        });
        self.call_nowait(bind)
    }

    /// Synchronously unbind an exchange from an exchange with the given routing key and arguments.
    ///
    /// If either the source or destination exchanges do not exist, the server will close this
    /// channel. Consider using [`exchange_declare`](#method.exchange_declare) and then
    /// [`Exchange::unbind_from_source`](struct.Exchange.html#method.unbind_from_source) (or one of
    /// its variants) to avoid this.
    ///
    /// Exchange-to-exchange binding is a RabbitMQ extension. You can examine the connection's
    /// [server properties](struct.Connection.html#method.server_properties) to see if the current
    /// connection supports this feature.
    pub fn exchange_unbind<S0: Into<String>, S1: Into<String>, S2: Into<String>>(
        &self,
        destination: S0,
        source: S1,
        routing_key: S2,
        arguments: FieldTable,
    ) -> Result<()> {
        let unbind = AmqpExchange::Unbind(ExchangeUnbind {
            destination: short(destination)?,
            source: short(source)?,
            routing_key: short(routing_key)?,
            nowait: false,
            arguments,
        });
        self.call::<_, ExchangeUnbindOk>(unbind)
            .map(|_unbind_ok| ())
    }

    /// Asynchronously unbind an exchange from an exchange with the given routing key and
    /// arguments.
    ///
    /// If either the source or destination exchanges do not exist, the server will close this
    /// channel. Consider using [`exchange_declare`](#method.exchange_declare) and then
    /// [`Exchange::unbind_from_source_nowait`](struct.Exchange.html#method.unbind_from_source_nowait)
    /// (or one of its variants) to avoid this.
    ///
    /// Exchange-to-exchange binding is a RabbitMQ extension. You can examine the connection's
    /// [server properties](struct.Connection.html#method.server_properties) to see if the current
    /// connection supports this feature.
    pub fn exchange_unbind_nowait<S0: Into<String>, S1: Into<String>, S2: Into<String>>(
        &self,
        destination: S0,
        source: S1,
        routing_key: S2,
        arguments: FieldTable,
    ) -> Result<()> {
        let unbind = AmqpExchange::Unbind(ExchangeUnbind {
            destination: short(destination)?,
            source: short(source)?,
            routing_key: short(routing_key)?,
            nowait: true,
            arguments,
        });
        self.call_nowait(unbind)
    }

    /// Synchronously delete an exchange.
    ///
    /// If `if_unused` is true, the exchange will only be deleted if it has no queue bindings.
    ///
    /// If the server cannot delete the exchange (either because it does not exist or because
    /// `if_unused` was true and it has queue bindings), it will close this channel.
    pub fn exchange_delete<S: Into<String>>(&self, exchange: S, if_unused: bool) -> Result<()> {
        let delete = AmqpExchange::Delete(ExchangeDelete {
            exchange: short(exchange)?,
            if_unused,
            nowait: false,
        });
        self.call::<_, ExchangeDeleteOk>(delete).map(|_ok| ())
    }

    /// Asynchronously delete an exchange.
    ///
    /// If `if_unused` is true, the exchange will only be deleted if it has no queue bindings.
    ///
    /// If the server cannot delete the exchange (either because it does not exist or because
    /// `if_unused` was true and it has queue bindings), it will close this channel.
    pub fn exchange_delete_nowait<S: Into<String>>(
        &self,
        exchange: S,
        if_unused: bool,
    ) -> Result<()> {
        let delete = AmqpExchange::Delete(ExchangeDelete {
            exchange: short(exchange)?,
            if_unused,
            nowait: true,
        });
        self.call_nowait(delete)
    }
}
