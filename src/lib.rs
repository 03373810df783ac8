pub use lottery_engine as engine; pub use lottery_models as models;
